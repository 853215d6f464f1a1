"""The WeChat sandbox: a stateful fake of the WeChat server API PushHub calls (see README.md): its WeChat side
in wechat_endpoints.py, its control side in services.py."""
