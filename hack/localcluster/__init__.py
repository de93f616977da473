"""The project's local Kubernetes cluster, as an importable package (``python -m localcluster``).

A real control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler) built from pinned versions by ``build-binaries.sh``, with kwok
simulating the nodes, GPU nodes included, and one real worker node
(``realnode.py``: containerd, kubelet, kube-proxy, metrics-server) where this
machine can run it. The control plane listens on loopback on ports chosen free
at start (on all addresses when the real node's pods must reach it), and all
state lives in ``.cluster/`` of the checkout, so two checkouts on one machine
never fight; the real node is one per machine and goes to the first cluster.

Commands:
    up        start the cluster, or reuse a healthy running one (idempotent)
    autoscalers  start KEDA and Karpenter (those built) in the running cluster
    down      stop every process ``up`` started and remove ``.cluster/``
    nodes     show the nodes with their GPU capacity
    status    exit 0 when the cluster is healthy
    load-image IMAGE...  copy Docker images into the real node's containerd

``MSO_REAL_NODE=0`` starts simulated nodes only. KEDA and Karpenter's kwok provider
(``autoscalers.py``) run too unless ``MSO_AUTOSCALERS=0``.

With ``MSO_USE_EXISTING_CLUSTER=true`` and ``KUBECONFIG`` naming a cluster
(kind, k3d, a real one), ``up`` only checks that cluster and links its
kubeconfig; nothing is started.

Only the standard library is used, so ``down`` works without the venv.
"""
