// The status the gateway answers when the client cancelled its call (or hung up).
#pragma once

#include <grpcpp/support/status.h>

namespace switchyard::gateway {

// It has a message on purpose: gRPC core itself fails a call that arrives just as a server shuts
// down with CANCELLED "CANCELLED" (grpc/grpc#41785, docs/operations.md), and a client must be able
// to tell that (never started, nothing billed) from a cancel of its own.
inline grpc::Status ClientCancelled() {
  return grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the call");
}

}  // namespace switchyard::gateway
