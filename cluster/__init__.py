"""The running cluster: Ray Serve application and its edge-vs-cloud placement policy, cluster definitions."""
