"""softswitch media layer: RTP sessions, SDP offer/answer, G.711, TTS, files, tones, DTMF, bridge, recorder.

Filled by a later issue. It must not know about SIP messages or the XML interpreter: a Leg hands it SDP and
gets SDP back.
"""
