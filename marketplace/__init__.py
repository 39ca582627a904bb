"""The veilx exchange: catalog, accounts, API, CLI.

See ``DESIGN.md`` §3: routes → services → repositories/models; only services touch
``pricing``, ``ledger`` and ``mpc_engine``.
"""

__version__ = "0.1.0"
