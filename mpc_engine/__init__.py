"""Privacy computations and the provider-side data node.

Only the rights-policy model (``mpc_engine.policy``) exists yet; the techniques
(``he``, ``psi``, ``mpc``, ``dp``, ``federated``, ``sdc``) and the data node arrive
with the data-node issue.
"""
