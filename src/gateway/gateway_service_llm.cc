// The LLM RPC of the public service: server streaming of tokens.
#include "gateway/gateway_service.h"

namespace switchyard::gateway {

grpc::ServerWriteReactor<v1::LLMResponse>* GatewayService::LLM(grpc::CallbackServerContext*,
                                                               const v1::LLMRequest*) {
  // A stream that ends at once with UNIMPLEMENTED.
  class Unimplemented final : public grpc::ServerWriteReactor<v1::LLMResponse> {
   public:
    Unimplemented() {
      Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                          "LLM is not implemented in this release: no runner for the llm "
                          "pipeline yet"));
    }
    void OnDone() override { delete this; }
  };
  return new Unimplemented();
}

}  // namespace switchyard::gateway
