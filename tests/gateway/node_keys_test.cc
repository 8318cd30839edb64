// Which key may register under which node id (gateway/membership/node_keys.h): the modes, the
// allow and deny lists, binding an id to its first proven key, rebind, reload on SIGHUP, and the
// bindings file; hostile policy files are refused with the file and entry named.
#include "gateway/membership/node_keys.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "common/node_identity.h"
#include "support/media_fixtures.h"

namespace switchyard::gateway {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using Mode = NodeIdentityConfig::Mode;

std::string Key(char fill) { return std::string(kNodePublicKeyBytes, fill); }
std::string Hex(char fill) { return NodeKeyHex(Key(fill)); }

class NodeKeysTest : public ::testing::Test {
 protected:
  fs::path WritePolicy(const Json& policy) {
    const fs::path p = tmp_.path() / "policy.json";
    std::ofstream(p) << policy.dump();
    return p;
  }
  NodeKeysPtr Make(Mode mode, const fs::path& policy = {}, const fs::path& bindings = {}) {
    NodeIdentityConfig config;
    config.mode = mode;
    config.policy_file = policy;
    config.bindings_file = bindings;
    auto keys = NodeKeys::Create(config);
    EXPECT_TRUE(keys.ok()) << keys.status();
    return keys.ok() ? *std::move(keys) : nullptr;
  }
  testing::TempDir tmp_;
};

TEST_F(NodeKeysTest, VerifyModeBindsAnIdToItsFirstKey) {
  auto keys = Make(Mode::kVerify);
  ASSERT_NE(keys, nullptr);
  // A node without a key is accepted while its id is not bound.
  EXPECT_TRUE(keys->Check("orch-1", "").ok());
  EXPECT_TRUE(keys->Check("orch-1", Key('a')).ok());
  ASSERT_TRUE(keys->Bind("orch-1", Key('a')).ok());
  EXPECT_EQ(keys->BoundKey("orch-1"), Key('a'));
  EXPECT_TRUE(keys->Check("orch-1", Key('a')).ok());  // the same node again (a restart)
  // Another key, or no key, for a bound id: refused, saying how the operator allows it.
  absl::Status other = keys->Check("orch-1", Key('b'));
  EXPECT_EQ(other.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(absl::StrContains(other.message(), "bound to key " + Hex('a').substr(0, 16)))
      << other;
  EXPECT_TRUE(absl::StrContains(other.message(), "rebind")) << other;
  EXPECT_EQ(keys->Check("orch-1", "").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(keys->Bind("orch-1", Key('b')).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(keys->BoundKey("orch-1"), Key('a'));
  // One key may serve several ids (one operator's nodes).
  EXPECT_TRUE(keys->Bind("orch-2", Key('a')).ok());
}

TEST_F(NodeKeysTest, RequireModeRefusesNodesWithoutAKey) {
  auto keys = Make(Mode::kRequire);
  ASSERT_NE(keys, nullptr);
  absl::Status none = keys->Check("orch-1", "");
  EXPECT_EQ(none.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(absl::StrContains(none.message(), "requires a node identity key")) << none;
  EXPECT_TRUE(keys->Check("orch-1", Key('a')).ok());
}

TEST_F(NodeKeysTest, OffModeChecksNothing) {
  auto keys = Make(Mode::kOff, WritePolicy({{"deny", {{{"node_id", "orch-1"}}}}}));
  ASSERT_NE(keys, nullptr);
  ASSERT_TRUE(keys->Bind("orch-1", Key('a')).ok());
  EXPECT_TRUE(keys->Check("orch-1", Key('b')).ok());
  EXPECT_EQ(keys->BoundKey("orch-1"), "");
}

TEST_F(NodeKeysTest, DenyAndAllowLists) {
  auto keys = Make(Mode::kVerify,
                   WritePolicy({{"allow",
                                 {{{"public_key", Hex('a')}},
                                  {{"public_key", Hex('b')}, {"node_id", "orch-b"}},
                                  {{"public_key", Hex('c')}}}},
                                {"deny", {{{"public_key", Hex('c')}}, {{"node_id", "evil"}}}}}));
  ASSERT_NE(keys, nullptr);
  EXPECT_TRUE(keys->Check("anything", Key('a')).ok());
  EXPECT_TRUE(keys->Check("orch-b", Key('b')).ok());
  absl::Status pinned = keys->Check("orch-x", Key('b'));  // b is allowed for orch-b only
  EXPECT_EQ(pinned.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(absl::StrContains(pinned.message(), "allowed for node 'orch-b' only")) << pinned;
  absl::Status unlisted = keys->Check("orch-1", Key('d'));
  EXPECT_EQ(unlisted.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(absl::StrContains(unlisted.message(), "allow list")) << unlisted;
  EXPECT_EQ(keys->Check("orch-1", "").code(), absl::StatusCode::kPermissionDenied);
  // Deny wins over allow; a denied id is refused whatever its key.
  EXPECT_TRUE(absl::StrContains(keys->Check("orch-1", Key('c')).message(), "denied"));
  EXPECT_EQ(keys->Check("evil", Key('a')).code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(NodeKeysTest, RebindAndReload) {
  const fs::path policy = WritePolicy(Json::object());
  auto keys = Make(Mode::kVerify, policy);
  ASSERT_NE(keys, nullptr);
  ASSERT_TRUE(keys->Bind("orch-1", Key('a')).ok());
  EXPECT_FALSE(keys->Check("orch-1", Key('b')).ok());
  // The operator allows the move (a node that lost its key file), then reloads.
  WritePolicy({{"rebind", {"orch-1"}}});
  ASSERT_TRUE(keys->Reload().ok());
  EXPECT_TRUE(keys->Check("orch-1", Key('b')).ok());
  ASSERT_TRUE(keys->Bind("orch-1", Key('b')).ok());
  EXPECT_EQ(keys->BoundKey("orch-1"), Key('b'));
  // A bad file on reload: the old lists stay, the error names the file.
  std::ofstream(policy) << "{\"rebind\": [\"orch-1\"], \"deny\": 3}";
  absl::Status bad = keys->Reload();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(bad.message(), policy.string())) << bad;
  EXPECT_TRUE(keys->Check("orch-1", Key('c')).ok());  // rebind still listed
  // Rebind removed: the new key holds.
  WritePolicy(Json::object());
  ASSERT_TRUE(keys->Reload().ok());
  EXPECT_FALSE(keys->Check("orch-1", Key('a')).ok());
  EXPECT_TRUE(keys->Check("orch-1", Key('b')).ok());
}

TEST_F(NodeKeysTest, BindingsPersistInTheirFile) {
  const fs::path file = tmp_.path() / "bindings.json";
  {
    auto keys = Make(Mode::kVerify, {}, file);  // no file yet: none bound
    ASSERT_NE(keys, nullptr);
    ASSERT_TRUE(keys->Bind("orch-1", Key('a')).ok());
    ASSERT_TRUE(keys->Bind("orch-2", Key('b')).ok());
  }
  struct stat st {};
  ASSERT_EQ(stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto again = Make(Mode::kVerify, {}, file);  // a restarted gateway
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->BoundKey("orch-1"), Key('a'));
  EXPECT_EQ(again->BoundKey("orch-2"), Key('b'));
  EXPECT_FALSE(again->Check("orch-1", Key('b')).ok());
  // A bindings file that cannot be written: the binding is not made.
  auto unwritable = Make(Mode::kVerify, {}, tmp_.path() / "missing-dir" / "bindings.json");
  ASSERT_NE(unwritable, nullptr);
  EXPECT_EQ(unwritable->Bind("orch-1", Key('a')).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(unwritable->BoundKey("orch-1"), "");
}

TEST_F(NodeKeysTest, HostilePolicyAndBindingsFilesAreRefusedByName) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[1]", "must be a JSON object"},
      {"{\"allow\": [{\"public_key\": \"zz\"}]}", "allow[0].public_key"},
      {"{\"allow\": [{\"public_key\": \"" + Hex('a') + "\", \"node_id\": \"a b\"}]}",
       "allow[0].node_id"},
      {"{\"deny\": [{\"public_key\": \"" + Hex('a') + "\", \"node_id\": \"x\"}]}",
       "exactly one of public_key and node_id"},
      {"{\"deny\": [{}]}", "exactly one"},
      {"{\"rebind\": [7]}", "rebind[0]"},
      {"{\"allowed\": []}", "unknown field 'allowed'"},
      {std::string(100, '[') + std::string(100, ']'), "nested deeper"},
      {"{\"allow\": [", "malformed JSON"},
  };
  for (const auto& [text, expected] : cases) {
    const fs::path p = tmp_.path() / "hostile.json";
    std::ofstream(p) << text;
    NodeIdentityConfig config;
    config.policy_file = p;
    auto keys = NodeKeys::Create(config);
    ASSERT_FALSE(keys.ok()) << text;
    EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument) << keys.status();
    EXPECT_TRUE(absl::StrContains(keys.status().message(), expected))
        << text << " -> " << keys.status();
    EXPECT_TRUE(absl::StrContains(keys.status().message(), p.string())) << keys.status();
  }
  NodeIdentityConfig missing;
  missing.policy_file = tmp_.path() / "nope.json";
  EXPECT_EQ(NodeKeys::Create(missing).status().code(), absl::StatusCode::kNotFound);
  const fs::path bindings = tmp_.path() / "bindings.json";
  std::ofstream(bindings) << "{\"nodes\": [{\"node_id\": \"x\", \"public_key\": \"00\"}]}";
  NodeIdentityConfig b;
  b.bindings_file = bindings;
  auto keys = NodeKeys::Create(b);
  ASSERT_FALSE(keys.ok());
  EXPECT_TRUE(absl::StrContains(keys.status().message(), "nodes[0].public_key")) << keys.status();
}

}  // namespace
}  // namespace switchyard::gateway
