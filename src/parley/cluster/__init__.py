"""Parley's engine replicated on Ray Serve (the optional extra `parley[cluster]`): the same conversation layer
(personas, skills, documents, store, APIs, page) in one ingress, generating on N replicas of parley's own engine
that Ray places, health-checks and restarts across a cluster's nodes.

    settings.py    --cluster ADDRESS (local, auto, HOST:PORT), --replicas N
    replica.py     Replica: one engine and scheduler in a Ray Serve replica, with its own KV tiers
    router.py      AffinityRouter: Ray Serve's request-router API; a conversation goes to the replica holding its KV
    deploy.py      joining the cluster, deploying the application (one per model), scaling, status, deleting
    scheduler.py   ClusterScheduler: the Scheduler's interface in the ingress, over the application's handle

Only settings.py imports nothing from Ray; the rest needs it (`pip install 'parley[cluster]'`).
"""
