"""The WeChat sandbox: a stateful fake of the WeChat server API PushHub calls (see services.py)."""
