"""Time (issue 16): the NTP server and client (sans-IO codec + thin UDP adapters) and device clock skew."""
