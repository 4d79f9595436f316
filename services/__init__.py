"""Reward services: reward models served as independently scaled Ray Serve deployments.

Rewards never import the trainer; the two sides share only the wire schema and the client.
"""
