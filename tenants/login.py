"""Dashboard sign-in with brute-force protection.

Failed sign-ins are counted per account (the e-mail typed, hashed) and per client address in fixed windows of
LOGIN_FAILURE_WINDOW seconds (pushhub.ratelimit, Redis in production). Once an account has
LOGIN_FAILURES_PER_ACCOUNT failures, or an address LOGIN_FAILURES_PER_IP, further attempts are refused with
429 and Retry-After until the window ends, without checking the password: a correct guess made during the lock
tells the attacker nothing. The owner of a locked account can still reset the password by e-mail.
"""

from __future__ import annotations

import hashlib
import math

from django.conf import settings
from django.contrib.auth.views import LoginView
from django.utils.translation import gettext as _

from pushhub import ratelimit


def _keys(request) -> list[tuple[str, int]]:
    account = (request.POST.get("username") or "").strip().lower()
    digest = hashlib.sha256(account.encode()).hexdigest()[:32]  # no e-mail addresses in cache keys
    address = request.META.get("REMOTE_ADDR") or "unknown"
    return [
        (f"login-failures:account:{digest}", settings.LOGIN_FAILURES_PER_ACCOUNT),
        (f"login-failures:ip:{address}", settings.LOGIN_FAILURES_PER_IP),
    ]


class ThrottledLoginView(LoginView):
    def post(self, request, *args, **kwargs):
        window = settings.LOGIN_FAILURE_WINDOW
        keys = _keys(request)
        waits = []
        for key, limit in keys:
            counted, reset = ratelimit.peek(key, window)
            if counted >= limit:
                waits.append(reset)
        if waits:
            return self._locked(max(waits))
        response = super().post(request, *args, **kwargs)
        if not request.user.is_authenticated:  # the form was invalid: a failed attempt
            for key, limit in keys:
                ratelimit.take(key, limit, window)
        return response

    def _locked(self, retry_after: int):
        message = _("Too many failed sign-ins. Try again in %(minutes)s min.") % {
            "minutes": math.ceil(retry_after / 60)
        }
        response = self.render_to_response(
            self.get_context_data(form=self.get_form_class()(self.request), locked_out=message)
        )
        response.status_code = 429
        response["Retry-After"] = str(retry_after)
        return response
