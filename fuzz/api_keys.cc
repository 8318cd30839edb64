// Fuzzes the gateway's API key file parsing (gateway::ParseApiKeys, the api_keys_file) and loads
// what parses into an ApiKeyStore, which must then admit a listed key and refuse others.
#include <cstdint>
#include <string>

#include "common/json_limits.h"
#include "fuzz/fuzz_util.h"
#include "gateway/billing/api_keys.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using switchyard::gateway::ApiKeyStore;
  const std::string text(switchyard::fuzz::AsView(data, size));
  auto keys = switchyard::gateway::ParseApiKeys(text, "keys.json");
  // Past the JSON depth limit: refused while parsing, naming it (a deep enough file overflowed
  // the stack in the readers' dump(); issue 18).
  if (!switchyard::CheckJsonDepth(text).ok()) {
    SWITCHYARD_FUZZ_CHECK(
        keys.status().message().find("nested deeper than") != absl::string_view::npos,
        "a keys file past the JSON depth limit was not refused naming it");
  }
  if (!keys.ok()) {
    switchyard::fuzz::CheckInvalidArgument(keys.status());
    SWITCHYARD_FUZZ_CHECK(keys.status().message().find("keys.json") != absl::string_view::npos,
                          "the error does not name the file");
    return 0;
  }
  for (const auto& k : *keys) {
    SWITCHYARD_FUZZ_CHECK(!k.id.empty(), "a key without an id");
    SWITCHYARD_FUZZ_CHECK(k.sha256.size() == 64, "a hash that is not 64 hex digits");
    for (char c : k.sha256) {
      SWITCHYARD_FUZZ_CHECK((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'),
                            "a hash that is not lowercase hex");
    }
    SWITCHYARD_FUZZ_CHECK(k.rate_per_second >= 0 && k.burst > 0 && k.max_concurrent >= 0,
                          "a negative or zero quota accepted");
  }
  ApiKeyStore store([] { return absl::UnixEpoch(); });
  store.Replace(*keys);
  SWITCHYARD_FUZZ_CHECK(store.size() == keys->size(), "the store lost keys");
  SWITCHYARD_FUZZ_CHECK(
      store.Admit("sy_not-a-listed-key").status().code() == absl::StatusCode::kUnauthenticated,
      "an unknown key was admitted");
  return 0;
}
