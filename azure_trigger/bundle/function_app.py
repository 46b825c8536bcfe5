"""The Functions host loads `function_app.py` from the app root: the app lives in the package."""

from azure_trigger.function_app import app  # noqa: F401
