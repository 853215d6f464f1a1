"""Forms of the account pages: sign-up, members and API keys. They parse and validate; the views act."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model, password_validation
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from tenants.models import ApiKey, Membership

ROLE_CHOICES = [
    (Membership.Role.OWNER, _("Owner")),
    (Membership.Role.ADMIN, _("Admin")),
    (Membership.Role.VIEWER, _("Viewer")),
]
SCOPE_CHOICES = [(ApiKey.Scope.READ, _("Read")), (ApiKey.Scope.WRITE, _("Write"))]


def email_taken(email: str) -> bool:
    """Users sign in with their e-mail as username, so either field holding it makes it taken."""
    return get_user_model().objects.filter(Q(email__iexact=email) | Q(username__iexact=email)).exists()


class TenantNameForm(forms.Form):
    tenant_name = forms.CharField(label=_("Team name"), max_length=100)

    def clean_tenant_name(self) -> str:
        name = self.cleaned_data["tenant_name"].strip()
        if not name:
            raise forms.ValidationError(_("Enter a team name."))
        return name


class SignupForm(TenantNameForm):
    email = forms.EmailField(label=_("E-mail"), max_length=150)
    password = forms.CharField(label=_("Password"), widget=forms.PasswordInput, strip=False)

    field_order = ["email", "password", "tenant_name"]

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].strip().lower()
        if email_taken(email):
            raise forms.ValidationError(_("An account with this e-mail already exists. Log in instead."))
        return email

    def clean(self):
        cleaned = super().clean()
        password = cleaned.get("password")
        if password:
            user = get_user_model()(username=cleaned.get("email", ""), email=cleaned.get("email", ""))
            try:
                password_validation.validate_password(password, user)
            except forms.ValidationError as exc:
                self.add_error("password", exc)
        return cleaned


class InviteForm(forms.Form):
    email = forms.EmailField(label=_("E-mail"), max_length=150)
    role = forms.ChoiceField(label=_("Role"), choices=ROLE_CHOICES, initial=Membership.Role.VIEWER)

    def clean_email(self) -> str:
        return self.cleaned_data["email"].strip().lower()


class RoleForm(forms.Form):
    role = forms.ChoiceField(label=_("Role"), choices=ROLE_CHOICES)


class ApiKeyForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=100)
    scope = forms.ChoiceField(label=_("Scope"), choices=SCOPE_CHOICES, initial=ApiKey.Scope.READ)
