"""softswitch engine: calls, the Plivo-XML interpreter, verbs, webhooks, REST API, config and logs.

Everything here sits above the SIP stack (``sip/``) and the media layer (``media/``) and reaches them only
through their public objects (a Leg, a media session); it never builds or parses SIP messages itself.
"""
