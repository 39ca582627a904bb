"""Privacy computations and the provider-side data node.

Subpackages: ``policy`` (rights policies), ``dp`` (OpenDP mechanisms, the privacy
accountant, release replay), ``aggregate`` (the ``aggregate`` computation: safe
filter grammar, exact-under-k and DP statistics), ``he`` (TenSEAL CKKS),
``protocol`` (node ↔ exchange ↔ SDK messages, receipts, node identity) and
``node`` (the provider's data node). PSI, secure aggregation and federated
training arrive with later issues.
"""
