"""Python code generated from ``protos/reward/v1/reward.proto`` (package ``reward.v1``).

``reward_pb2`` holds the messages, ``reward_pb2_grpc`` the ``RewardService`` stub, servicer and
``add_RewardServiceServicer_to_server`` (what the Ray Serve gRPC proxy is pointed at). The
generated files are committed; after editing the .proto, run ``python -m services.proto.generate``
(``make proto``) and commit the result. A unit test fails when they are out of date.
"""
