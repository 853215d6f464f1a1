"""pushhub.wechat.rules: WeChat's subscribe value rules and template content parsing."""

import pytest

from pushhub.wechat.rules import check_value, key_type, parse_template_fields


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("thing1", "thing"),
        ("character_string12", "character_string"),
        ("phone_number3", "phone_number"),
        ("keyword1", "keyword"),
        ("short_thing05", "short_thing"),
        ("time", "time"),
    ],
)
def test_key_type_is_the_letters_of_the_key(key, expected):
    assert key_type(key) == expected


VALID = [
    ("thing1", "机械键盘已发货，请注意查收"),
    ("thing1", "x" * 20),
    ("thing1", "Order #12 ready!"),
    ("number2", "12345678901234567890123456789012"),
    ("number2", "3.1415"),
    ("letter3", "abcXYZ"),
    ("letter3", "a" * 32),
    ("symbol4", "%$#@!"),
    ("symbol4", "—"),
    ("character_string5", "SN-2024/01_ABC.9"),
    ("character_string5", "A" * 32),
    ("time6", "15:01"),
    ("time6", "15:01:59"),
    ("time6", "2019年10月1日 15:01"),
    ("time6", "2019-10-01 15:01:00"),
    ("time6", "15:01~17:30"),
    ("time6", "2019年10月1日 15:01 ~ 2019年10月1日 17:00"),
    ("date7", "2019年10月1日"),
    ("date7", "2019年10月1日 15:01"),
    ("date7", "2019年10月"),
    ("date7", "10月1日"),
    ("date7", "2018-01-01"),
    ("date7", "2018/01/01"),
    ("date7", "2018.01.01"),
    ("date7", "2018-01"),
    ("date7", "01-01"),
    ("date7", "2019年10月1日~2019年10月7日"),
    ("amount8", "¥399.00"),
    ("amount8", "￥100"),
    ("amount8", "$1234567890"),
    ("amount8", "100元"),
    ("amount8", "¥88.5元"),
    ("amount8", "99.99"),
    ("phone_number9", "+86-0766-66888866"),
    ("phone_number9", "13800138000"),
    ("car_number10", "粤A8Z888挂"),
    ("car_number10", "京A12345"),
    ("name11", "张三"),
    ("name11", "欧阳娜娜娜娜娜娜娜娜"),
    ("name11", "John Smith"),
    ("name11", "a" * 20),
    ("name11", "张John"),
    ("phrase12", "配送中"),
    ("phrase12", "已签收成功"),
    ("short_thing13", "anything goes here, really"),
    ("enum14", "WeChat decides"),
]

INVALID = [
    ("thing1", "x" * 21),
    ("thing1", ""),
    ("thing1", "two\nlines"),
    ("thing1", "carriage\rreturn"),
    ("number2", "1" * 33),
    ("number2", "12a"),
    ("number2", "-5"),
    ("number2", "1.2.3"),
    ("letter3", "abc1"),
    ("letter3", "a" * 33),
    ("letter3", "中文"),
    ("symbol4", "%%%%%%"),
    ("symbol4", "a!"),
    ("symbol4", "中"),
    ("character_string5", "订单123"),
    ("character_string5", "A" * 33),
    ("time6", "25:00"),
    ("time6", "15:61"),
    ("time6", "tomorrow"),
    ("time6", "2019年10月1日"),
    ("time6", "15:01~16:00~17:00"),
    ("date7", "2019年13月1日"),
    ("date7", "2019年10月1日 25:00"),
    ("date7", "15:01"),
    ("date7", "next week"),
    ("amount8", "¥12345678901"),
    ("amount8", "¥¥100"),
    ("amount8", "一百元"),
    ("amount8", "100 dollars"),
    ("amount8", "1,000"),
    ("phone_number9", "1" * 18),
    ("phone_number9", "call 138"),
    ("car_number10", "粤A8Z888挂12"),
    ("car_number10", "粤A8中888挂"),
    ("name11", "欧阳娜娜娜娜娜娜娜娜娜"),
    ("name11", "a" * 21),
    ("name11", "R2D2"),
    ("phrase12", "已签收成功了"),
    ("phrase12", "ok"),
    ("short_thing13", ""),
    ("enum14", "line\nbreak"),
]


@pytest.mark.parametrize(("key", "value"), VALID)
def test_it_accepts_what_wechat_accepts(key, value):
    assert check_value(key, value) is None


@pytest.mark.parametrize(("key", "value"), INVALID)
def test_it_refuses_what_wechat_refuses_with_a_reason(key, value):
    reason = check_value(key, value)
    assert isinstance(reason, str) and reason


def test_reasons_are_short_and_specific():
    assert check_value("thing1", "x" * 21) == "longer than 20 characters"
    assert check_value("thing1", "a\nb") == "contains a newline"
    assert check_value("thing1", "") == "is empty"
    assert check_value("character_string1", "订单") == "Chinese characters are not allowed"


def test_it_parses_subscribe_template_content_in_order():
    content = "订单号:{{character_string1.DATA}}\n金额:{{amount2.DATA}}\n"
    assert parse_template_fields(content) == [
        {"key": "character_string1", "name": "订单号"},
        {"key": "amount2", "name": "金额"},
    ]


def test_it_parses_full_width_colons_and_spaces():
    content = "会议时间： {{date2.DATA}}\n会议地点：{{thing1.DATA}}\n"
    assert parse_template_fields(content) == [
        {"key": "date2", "name": "会议时间"},
        {"key": "thing1", "name": "会议地点"},
    ]


def test_it_parses_legacy_formid_templates_without_colons():
    content = "购买地点{{keyword1.DATA}}\n购买时间{{keyword2.DATA}}\n物品名称{{keyword3.DATA}}\n"
    assert [field["key"] for field in parse_template_fields(content)] == ["keyword1", "keyword2", "keyword3"]
    assert parse_template_fields(content)[0]["name"] == "购买地点"


def test_it_handles_two_fields_on_a_line_repeats_and_unnamed_fields():
    content = "{{first.DATA}}\n从{{time1.DATA}}到{{time2.DATA}}\n{{time1.DATA}}\n"
    assert parse_template_fields(content) == [
        {"key": "first", "name": ""},
        {"key": "time1", "name": "从"},
        {"key": "time2", "name": "到"},
    ]


def test_content_without_fields_parses_to_nothing():
    assert parse_template_fields("no placeholders here") == []
    assert parse_template_fields("{{thing1}}") == []
