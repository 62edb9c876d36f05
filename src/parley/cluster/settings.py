"""RaySettings: the cluster section of parley's settings (parley.settings assembles the sections): the Ray cluster
parley's engine replicas run on (cluster/), and how many."""

from __future__ import annotations

from dataclasses import dataclass

from parley.config import check, setting


@dataclass(frozen=True, slots=True)
class RaySettings:
    cluster: str = setting(
        "", "--cluster", metavar="ADDRESS", env="PARLEY_CLUSTER",
        help="generate on replicas of parley's engine deployed on this Ray cluster as a Ray Serve application "
             "(pip install 'parley[cluster]'): 'local' starts one on this machine for the process's life, 'auto' "
             "joins the one `ray start --head` runs here, HOST:PORT another (run parley on one of its nodes; Ray Client's "
             "ray:// cannot stream); each conversation "
             "goes to the replica holding its KV (default: none, the in-process engine)")
    replicas: int = setting(
        2, "--replicas", metavar="N", least=1,
        help="engine replicas to deploy on the Ray cluster (--cluster), each with --threads CPU threads (0: this "
             "machine's cores shared among them) and a Ray reservation of as many CPUs; an application already "
             "running keeps its own count (parley cluster scale changes it) (default 2)")

    def __post_init__(self) -> None:
        check(self)
