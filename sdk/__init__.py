"""The Python client library for buyers and providers.

Arrives with the data-node issue (``Client``, resource namespaces, local keys);
nothing here yet. The SDK never imports ``marketplace``.
"""
