"""The authentication core: users, PINs, templates, lockout, flow, fallback, audit events.

It decides and performs no I/O of its own beyond the repository it is given.
"""
