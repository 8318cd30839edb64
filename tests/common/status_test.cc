// Unit tests for the absl::Status <-> grpc::Status conversions (common/status.h).
#include "common/status.h"

#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "switchyard/node/v1/node.pb.h"

namespace switchyard {
namespace {

// Every canonical code, with its gRPC name.
struct CodeCase {
  absl::StatusCode absl_code;
  grpc::StatusCode grpc_code;
  const char* name;
};

const CodeCase kCodes[] = {
    {absl::StatusCode::kCancelled, grpc::StatusCode::CANCELLED, "CANCELLED"},
    {absl::StatusCode::kUnknown, grpc::StatusCode::UNKNOWN, "UNKNOWN"},
    {absl::StatusCode::kInvalidArgument, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_ARGUMENT"},
    {absl::StatusCode::kDeadlineExceeded, grpc::StatusCode::DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"},
    {absl::StatusCode::kNotFound, grpc::StatusCode::NOT_FOUND, "NOT_FOUND"},
    {absl::StatusCode::kAlreadyExists, grpc::StatusCode::ALREADY_EXISTS, "ALREADY_EXISTS"},
    {absl::StatusCode::kPermissionDenied, grpc::StatusCode::PERMISSION_DENIED, "PERMISSION_DENIED"},
    {absl::StatusCode::kResourceExhausted, grpc::StatusCode::RESOURCE_EXHAUSTED,
     "RESOURCE_EXHAUSTED"},
    {absl::StatusCode::kFailedPrecondition, grpc::StatusCode::FAILED_PRECONDITION,
     "FAILED_PRECONDITION"},
    {absl::StatusCode::kAborted, grpc::StatusCode::ABORTED, "ABORTED"},
    {absl::StatusCode::kOutOfRange, grpc::StatusCode::OUT_OF_RANGE, "OUT_OF_RANGE"},
    {absl::StatusCode::kUnimplemented, grpc::StatusCode::UNIMPLEMENTED, "UNIMPLEMENTED"},
    {absl::StatusCode::kInternal, grpc::StatusCode::INTERNAL, "INTERNAL"},
    {absl::StatusCode::kUnavailable, grpc::StatusCode::UNAVAILABLE, "UNAVAILABLE"},
    {absl::StatusCode::kDataLoss, grpc::StatusCode::DATA_LOSS, "DATA_LOSS"},
    {absl::StatusCode::kUnauthenticated, grpc::StatusCode::UNAUTHENTICATED, "UNAUTHENTICATED"},
};

TEST(StatusTest, OkConvertsBothWays) {
  grpc::Status g = ToGrpcStatus(absl::OkStatus());
  EXPECT_TRUE(g.ok());
  EXPECT_EQ(g.error_code(), grpc::StatusCode::OK);
  EXPECT_EQ(g.error_message(), "");
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
}

TEST(StatusTest, ToGrpcKeepsCodeAndMessage) {
  for (const auto& c : kCodes) {
    const std::string message = std::string("message for ") + c.name + " \xc3\xa9 : with colons";
    grpc::Status g = ToGrpcStatus(absl::Status(c.absl_code, message));
    EXPECT_EQ(g.error_code(), c.grpc_code) << c.name;
    EXPECT_EQ(g.error_message(), message) << c.name;
    EXPECT_FALSE(g.ok()) << c.name;
  }
}

TEST(StatusTest, FromGrpcKeepsCodeAndMessage) {
  for (const auto& c : kCodes) {
    const std::string message = std::string("from grpc ") + c.name;
    absl::Status a = FromGrpcStatus(grpc::Status(c.grpc_code, message));
    EXPECT_EQ(a.code(), c.absl_code) << c.name;
    EXPECT_EQ(a.message(), message) << c.name;
  }
}

TEST(StatusTest, RoundTripIsIdentity) {
  for (const auto& c : kCodes) {
    absl::Status original(c.absl_code, std::string("round trip ") + c.name);
    EXPECT_EQ(FromGrpcStatus(ToGrpcStatus(original)), original) << c.name;
  }
}

TEST(StatusTest, ErrorWithEmptyMessageStaysAnError) {
  grpc::Status g = ToGrpcStatus(absl::Status(absl::StatusCode::kUnavailable, ""));
  EXPECT_EQ(g.error_code(), grpc::StatusCode::UNAVAILABLE);
  absl::Status a = FromGrpcStatus(grpc::Status(grpc::StatusCode::NOT_FOUND, ""));
  EXPECT_EQ(a.code(), absl::StatusCode::kNotFound);
}

TEST(StatusTest, GrpcCodeNames) {
  EXPECT_STREQ(GrpcCodeName(grpc::StatusCode::OK), "OK");
  for (const auto& c : kCodes) EXPECT_STREQ(GrpcCodeName(c.grpc_code), c.name);
  EXPECT_STREQ(GrpcCodeName(static_cast<grpc::StatusCode>(42)), "UNKNOWN");
}

TEST(StatusTest, ModelStateNames) {
  EXPECT_STREQ(ModelStateName(node::v1::MODEL_STATE_READY), "ready");
  EXPECT_STREQ(ModelStateName(node::v1::MODEL_STATE_LOADING), "loading");
  EXPECT_STREQ(ModelStateName(node::v1::MODEL_STATE_FAILED), "failed");
  EXPECT_STREQ(ModelStateName(node::v1::MODEL_STATE_UNLOADED), "unloaded");
  EXPECT_STREQ(ModelStateName(node::v1::MODEL_STATE_COLD), "cold");
  EXPECT_STREQ(ModelStateName(node::v1::MODEL_STATE_UNSPECIFIED), "cold");
  EXPECT_STREQ(ModelStateName(static_cast<node::v1::ModelState>(42)), "cold");
}

TEST(StatusTest, ReturnIfErrorMacro) {
  int reached = 0;
  auto fn = [&](absl::Status first) -> absl::Status {
    SY_RETURN_IF_ERROR(first);
    ++reached;
    return absl::OkStatus();
  };
  EXPECT_TRUE(fn(absl::OkStatus()).ok());
  EXPECT_EQ(reached, 1);
  absl::Status err = absl::AbortedError("stop");
  EXPECT_EQ(fn(err), err);
  EXPECT_EQ(reached, 1);
}

}  // namespace
}  // namespace switchyard
