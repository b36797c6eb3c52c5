"""Row -> record converters, one FORMATS dict. (Placeholder: filled in by the data work.)"""

FORMATS: dict[str, object] = {
    "alpaca": None,
    "sharegpt": None,
    "messages": None,
    "query_response": None,
    "swift_conversation": None,
    "text": None,
}
