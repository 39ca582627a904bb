"""Typed web3.py wrappers per contract, the outbox relay and the chain verifier.

Arrives with the on-chain ledger issue; nothing here yet.
"""
