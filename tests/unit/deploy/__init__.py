"""Unit tests of the installation: the Helm chart, the kustomize tree and the operator image."""
