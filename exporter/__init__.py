"""Prometheus exporter for the call quality of live Zoom meetings and webinars."""

__version__ = "0.1.0"
