"""``/wechat/{appid}/events``: the URL a tenant pastes into WeChat's 消息推送配置.

Plain Django views (WeChat is no API client): they find the app, hand the request to formids.events and
format the answer: the echostr or ``success`` as text, errors as the contract's JSON.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from formids import events
from pushhub.api import ApiError, api_error_response, error_response
from tenants.models import MiniProgram

TEXT = "text/plain; charset=utf-8"


@csrf_exempt
@never_cache
def wechat_events(request: HttpRequest, appid: str) -> HttpResponse:
    """``GET``: WeChat's URL check (echo ``echostr``). ``POST``: a pushed message or event → ``success``."""
    app = MiniProgram.objects.live().filter(appid=appid).first()
    if app is None:
        return error_response(404, "not_found", "Not found.")
    try:
        if request.method == "GET":
            return HttpResponse(events.verify_echo(app, request.GET), content_type=TEXT)
        if request.method == "POST":
            events.receive(app, request.GET, request.body, request.content_type or "")
            return HttpResponse("success", content_type=TEXT)
    except ApiError as error:
        return api_error_response(error)
    response = error_response(405, "method_not_allowed", "Use GET or POST.")
    response["Allow"] = "GET, POST"
    return response
