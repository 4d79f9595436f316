"""Ray Serve shells around the reward models: deployments, the ingress, the app builder."""
