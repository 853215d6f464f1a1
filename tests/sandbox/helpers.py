"""Constants and request bodies shared by the sandbox tests."""

from __future__ import annotations

from typing import Any

APPID = "wx0123456789abcdef"
SECRET = "0123456789abcdef0123456789abcdef"
BASE = "/sandbox/wechat/"
SUBSCRIBE_CONTENT = "订单号:{{character_string1.DATA}}\n商品:{{thing2.DATA}}\n金额:{{amount3.DATA}}\n"
FORMID_CONTENT = "购买地点{{keyword1.DATA}}\n购买时间{{keyword2.DATA}}\n"


def subscribe_body(user, template, **overrides: Any) -> dict[str, Any]:
    """A valid subscribe/send body; overrides replace top-level fields; a ``data`` dict replaces some values."""
    data: Any = {
        "character_string1": {"value": "SN20240101-0001"},
        "thing2": {"value": "机械键盘"},
        "amount3": {"value": "¥399.00"},
    }
    changes = overrides.pop("data", {})
    if isinstance(changes, dict):
        data = {key: value for key, value in {**data, **changes}.items() if value is not None}
    else:
        data = changes
    return {"touser": user.openid, "template_id": template.template_id, "data": data, **overrides}


def formid_body(user, template, form_id: str, **overrides: Any) -> dict[str, Any]:
    data = {"keyword1": {"value": "TIT造舰厂"}, "keyword2": {"value": "2015年01月05日 12:30"}}
    return {
        "touser": user.openid,
        "template_id": template.template_id,
        "form_id": form_id,
        "page": "pages/index?foo=bar",
        "data": data,
        **overrides,
    }
