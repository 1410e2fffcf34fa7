"""kiosk: on-device face authentication for shared staff terminals."""

__version__ = "0.1.0"
