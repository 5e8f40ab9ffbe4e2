"""Values a careless or hostile partner sends that no record can hold, shared by the endpoints' tests."""

# Before NumPy's datetime range, before the plausible window, and beyond what pandas can hold.
TIMES_OUTSIDE_THE_WINDOW = [
    "1677-09-21T00:12:44Z",
    "1900-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
]
