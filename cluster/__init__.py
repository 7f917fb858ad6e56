"""The host inventory as data: cluster/hosts/<name>/host.yaml, one file per host class
(docs/cluster.md). No code: a package only so that a wheel carries the inventory beside
suite/, where suite/inventory.py finds it, installed or in a checkout."""
