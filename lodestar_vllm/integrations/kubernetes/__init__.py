"""Kubernetes awareness (needs the ``k8s`` extra, kubernetes-asyncio): hardware discovery from pods and nodes
(``hardware``) and one learned model shared across router replicas (``sharing`` core, ``lease`` election,
``model_board`` ConfigMap/volume transport, ``replica`` glue). Nothing here is imported by the learner."""
