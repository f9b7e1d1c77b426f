"""The model zoo: its registry (zoo.yaml), builds, recorded results, publishing, and loading by short name."""
