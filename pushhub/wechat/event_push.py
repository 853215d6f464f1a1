"""Names in WeChat's event push for subscribe messages, shared by our events endpoint and the sandbox that
imitates WeChat's side.

The event push is what WeChat's documentation calls 消息推送 ("message push"): WeChat POSTs events to the
app's server. In PushHub's code "push" alone means our send (templates_app's Push).
"""

POPUP = "subscribe_msg_popup_event"  # a user answered wx.requestSubscribeMessage
CHANGE = "subscribe_msg_change_event"  # a user changed a template in the mini-program's settings
SENT = "subscribe_msg_sent_event"  # the final outcome of a subscribe send (by MsgID)
# In XML (and in some JSON event pushes) the items sit inside an element named after the event.
ITEM_WRAPPERS = {
    POPUP: "SubscribeMsgPopupEvent",
    CHANGE: "SubscribeMsgChangeEvent",
    SENT: "SubscribeMsgSentEvent",
}
