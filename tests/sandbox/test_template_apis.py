"""Template management endpoints: gettemplate, deltemplate, wxopen/template/list and /del."""

import pytest

from pushhub.wechat.sandbox import services

from .helpers import APPID, FORMID_CONTENT

pytestmark = pytest.mark.django_db


def test_gettemplate_lists_subscribe_templates_only(wechat, token, subscribe_template, formid_template):
    answer = wechat.get("wxaapi/newtmpl/gettemplate", access_token=token)
    assert answer == {
        "errcode": 0,
        "errmsg": "ok",
        "data": [
            {
                "priTmplId": subscribe_template.template_id,
                "title": "订单发货通知",
                "content": subscribe_template.content,
                "example": "",
                "type": 2,
            }
        ],
    }


def test_gettemplate_requires_get(wechat, token):
    assert wechat.post("wxaapi/newtmpl/gettemplate", {}, access_token=token)["errcode"] == 43001


def test_template_list_pages_formid_templates(wechat, token, subscribe_template):
    ids = [
        services.add_template(APPID, kind="formid", title=f"T{n}", content=FORMID_CONTENT).template_id
        for n in range(3)
    ]
    answer = wechat.post("cgi-bin/wxopen/template/list", {"offset": 0, "count": 2}, access_token=token)
    assert answer["errcode"] == 0
    assert [t["template_id"] for t in answer["list"]] == ids[:2]
    assert set(answer["list"][0]) == {"template_id", "title", "content", "example"}
    rest = wechat.post("cgi-bin/wxopen/template/list", {"offset": 2, "count": 20}, access_token=token)
    assert [t["template_id"] for t in rest["list"]] == ids[2:]


@pytest.mark.parametrize("count", [0, 21, "many"])
def test_template_list_count_must_be_1_to_20(wechat, token, count):
    answer = wechat.post("cgi-bin/wxopen/template/list", {"offset": 0, "count": count}, access_token=token)
    assert answer == {"errcode": 47003, "errmsg": "argument invalid! count invalid"}


def test_deleting_templates_through_the_wechat_apis(wechat, token, subscribe_template, formid_template):
    gone = wechat.post(
        "wxaapi/newtmpl/deltemplate", {"priTmplId": subscribe_template.template_id}, access_token=token
    )
    assert gone == {"errcode": 0, "errmsg": "ok"}
    again = wechat.post(
        "wxaapi/newtmpl/deltemplate", {"priTmplId": subscribe_template.template_id}, access_token=token
    )
    assert again["errcode"] == 40037
    assert wechat.post(
        "cgi-bin/wxopen/template/del", {"template_id": formid_template.template_id}, access_token=token
    ) == {"errcode": 0, "errmsg": "ok"}
    assert services.list_templates(APPID) == []
