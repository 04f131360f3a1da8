"""The county console: a web page and a JSON API for county staff (records, face search, fleet), behind
PIN + TOTP sign-in with lockout and an idle lock; every sign-in and every search goes to the gallery's
audit log."""
