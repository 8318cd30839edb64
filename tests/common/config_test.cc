// Unit tests for the strict JSON config helpers (common/config.h) and WritePortFile
// (common/daemon.h).
#include "common/config.h"

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/daemon.h"
#include "support/media_fixtures.h"

namespace switchyard {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using ::switchyard::testing::ReadFile;
using ::switchyard::testing::TempDir;
using ::switchyard::testing::WriteFile;
using ::testing::HasSubstr;

// ---------------------------------------------------------------------------------------------
// ConfigObject::CheckKeys

TEST(ConfigObjectTest, CheckKeysAcceptsKnownFieldsAndEmptyObject) {
  const Json json = Json::parse(R"({"a": 1, "b": "x"})");
  ConfigObject obj(json, "conf/a.json", "");
  EXPECT_TRUE(obj.CheckKeys({"a", "b", "c"}).ok());

  const Json empty = Json::object();
  EXPECT_TRUE(ConfigObject(empty, "conf/a.json", "").CheckKeys({"a"}).ok());
}

TEST(ConfigObjectTest, CheckKeysRejectsUnknownFieldNamingFileAndField) {
  const Json json = Json::parse(R"({"a": 1, "colour": "red"})");
  ConfigObject obj(json, "conf/a.json", "");
  absl::Status s = obj.CheckKeys({"a", "b"});
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("conf/a.json"));
  EXPECT_THAT(s.message(), HasSubstr("colour"));
  EXPECT_THAT(s.message(), HasSubstr("unknown field"));
  // The message lists the fields that are allowed.
  EXPECT_THAT(s.message(), HasSubstr("a, b"));
}

TEST(ConfigObjectTest, CheckKeysInNestedObjectNamesFullPath) {
  const Json json = Json::parse(R"({"models": [{"id": "m"}, {"id": "n", "bogus": 1}]})");
  ConfigObject obj(json["models"][1], "orch.json", "models[1]");
  absl::Status s = obj.CheckKeys({"id"});
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("orch.json: models[1].bogus"));
}

TEST(ConfigObjectTest, CheckKeysRejectsNonObject) {
  for (const char* text : {"[]", "3", "\"str\"", "null", "true"}) {
    const Json json = Json::parse(text);
    absl::Status s = ConfigObject(json, "f.json", "log").CheckKeys({"level"});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(s.message(), HasSubstr("f.json: log")) << text;
    EXPECT_THAT(s.message(), HasSubstr("must be a JSON object")) << text;
  }
}

// ---------------------------------------------------------------------------------------------
// ConfigObject::Read

TEST(ConfigObjectTest, ReadPresentValues) {
  const Json json = Json::parse(
      R"({"n": 7, "s": "hi", "b": true, "d": 1.5, "big": 5000000000, "v": ["x", "y"]})");
  ConfigObject obj(json, "f.json", "");
  int n = 0;
  std::string s;
  bool b = false;
  double d = 0;
  int64_t big = 0;
  std::vector<std::string> v;
  ASSERT_TRUE(obj.Read("n", &n).ok());
  ASSERT_TRUE(obj.Read("s", &s).ok());
  ASSERT_TRUE(obj.Read("b", &b).ok());
  ASSERT_TRUE(obj.Read("d", &d).ok());
  ASSERT_TRUE(obj.Read("big", &big).ok());
  ASSERT_TRUE(obj.Read("v", &v).ok());
  EXPECT_EQ(n, 7);
  EXPECT_EQ(s, "hi");
  EXPECT_TRUE(b);
  EXPECT_DOUBLE_EQ(d, 1.5);
  EXPECT_EQ(big, 5000000000LL);
  EXPECT_EQ(v, (std::vector<std::string>{"x", "y"}));
}

TEST(ConfigObjectTest, ReadMissingOptionalKeepsDefault) {
  const Json json = Json::object();
  ConfigObject obj(json, "f.json", "");
  int n = 42;
  std::string s = "default";
  EXPECT_TRUE(obj.Read("n", &n).ok());
  EXPECT_TRUE(obj.Read("s", &s, /*required=*/false).ok());
  EXPECT_EQ(n, 42);
  EXPECT_EQ(s, "default");
}

TEST(ConfigObjectTest, ReadMissingRequiredFailsNamingFileAndPath) {
  const Json json = Json::object();
  ConfigObject obj(json, "conf/orch.json", "models[3]");
  std::string id = "keep";
  absl::Status s = obj.Read("id", &id, /*required=*/true);
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("conf/orch.json: models[3].id"));
  EXPECT_THAT(s.message(), HasSubstr("is required"));
  EXPECT_EQ(id, "keep");
}

TEST(ConfigObjectTest, ReadWrongTypeFailsNamingFieldAndType) {
  const Json json = Json::parse(R"({"n": "seven", "s": 3, "b": "yes", "v": "x", "o": {"a": 1}})");
  ConfigObject obj(json, "f.json", "sect");
  int n = 1;
  absl::Status s = obj.Read("n", &n);
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("f.json: sect.n"));
  EXPECT_THAT(s.message(), HasSubstr("wrong type"));
  EXPECT_THAT(s.message(), HasSubstr("string"));

  std::string str;
  s = obj.Read("s", &str);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("sect.s"));
  EXPECT_THAT(s.message(), HasSubstr("number"));

  bool b = false;
  EXPECT_EQ(obj.Read("b", &b).code(), absl::StatusCode::kInvalidArgument);
  std::vector<std::string> v;
  EXPECT_EQ(obj.Read("v", &v).code(), absl::StatusCode::kInvalidArgument);
  int o = 0;
  EXPECT_EQ(obj.Read("o", &o).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ConfigObjectTest, ReadArrayWithWrongElementTypeFails) {
  const Json json = Json::parse(R"({"v": ["a", 2]})");
  std::vector<std::string> v;
  absl::Status s = ConfigObject(json, "f.json", "").Read("v", &v);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("f.json: v"));
}

// nlohmann's get<int>() would convert booleans and floats and narrow out-of-range integers
// silently ("instances": true reading as 1); Read must refuse them.
TEST(ConfigObjectTest, ReadIntegerRejectsBoolFloatAndOutOfRange) {
  const Json json = Json::parse(R"({"t": true, "f": 2.9, "huge": 4294967297, "neg": -1})");
  ConfigObject obj(json, "f.json", "");
  int n = 0;
  EXPECT_EQ(obj.Read("t", &n).code(), absl::StatusCode::kInvalidArgument) << "read " << n;
  EXPECT_EQ(obj.Read("f", &n).code(), absl::StatusCode::kInvalidArgument) << "read " << n;
  EXPECT_EQ(obj.Read("huge", &n).code(), absl::StatusCode::kInvalidArgument) << "read " << n;
  uint32_t u = 0;
  EXPECT_EQ(obj.Read("neg", &u).code(), absl::StatusCode::kInvalidArgument) << "read " << u;
}

TEST(ConfigObjectTest, ChildAndPath) {
  const Json json = Json::parse(R"({"torch": {"intra_op_threads": "x"}})");
  ConfigObject root(json, "f.json", "");
  EXPECT_EQ(root.Path("listen"), "listen");
  ConfigObject torch = root.Child("torch");
  EXPECT_EQ(torch.Path("intra_op_threads"), "torch.intra_op_threads");
  EXPECT_EQ(torch.Path(""), "torch");
  EXPECT_EQ(torch.file(), "f.json");
  int n = 0;
  absl::Status s = torch.Read("intra_op_threads", &n);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("f.json: torch.intra_op_threads"));

  // A missing child is an empty object: every key is absent, CheckKeys passes.
  ConfigObject log = root.Child("log");
  EXPECT_TRUE(log.CheckKeys({"level"}).ok());
  EXPECT_FALSE(log.Has("level"));
  EXPECT_TRUE(root.Has("torch"));
  EXPECT_FALSE(root.Has("log"));
}

TEST(ConfigObjectTest, ErrorFormat) {
  const Json json = Json::object();
  absl::Status s =
      ConfigObject(json, "configs/orch.json", "models[2]").Error("capacity", "must be > 0");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "configs/orch.json: models[2].capacity: must be > 0");
}

// ---------------------------------------------------------------------------------------------
// ResolveConfigPath

TEST(ResolveConfigPathTest, AbsoluteStays) {
  EXPECT_EQ(ResolveConfigPath("/etc/switchyard/orch.json", "/models/a.pt"),
            fs::path("/models/a.pt"));
}

TEST(ResolveConfigPathTest, RelativeIsFromConfigFolder) {
  EXPECT_EQ(ResolveConfigPath("/etc/switchyard/orch.json", "models/a.pt"),
            fs::path("/etc/switchyard/models/a.pt"));
  EXPECT_EQ(ResolveConfigPath("/etc/switchyard/orch.json", "../a.pt"),
            fs::path("/etc/switchyard/../a.pt"));
  EXPECT_EQ(ResolveConfigPath("configs/orch.json", "a.pt"), fs::path("configs/a.pt"));
}

TEST(ResolveConfigPathTest, NoConfigFileOrNoFolderKeepsValue) {
  EXPECT_EQ(ResolveConfigPath("", "models/a.pt"), fs::path("models/a.pt"));
  EXPECT_EQ(ResolveConfigPath("orch.json", "models/a.pt"), fs::path("models/a.pt"));
}

// ---------------------------------------------------------------------------------------------
// ValidateHostPort

TEST(ValidateHostPortTest, AcceptsGoodAddresses) {
  for (const char* a : {"127.0.0.1:50051", "localhost:1", "example.com:65535", "[::1]:8080",
                        "0.0.0.0:0", "h:00080"}) {
    EXPECT_TRUE(ValidateHostPort(a, "listen").ok()) << a << ": " << ValidateHostPort(a, "listen");
  }
}

TEST(ValidateHostPortTest, RejectsBadAddressesNamingWhat) {
  for (const char* a :
       {"", "localhost", ":50051", "localhost:", "host:abc", "host:12a", "host:-1", "host:65536",
        "host:99999", "host:123456", "host: 80", "host:99999999999999999999"}) {
    absl::Status s = ValidateHostPort(a, "conf.json: gateways[2]");
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << "'" << a << "'";
    EXPECT_THAT(s.message(), HasSubstr("conf.json: gateways[2]")) << "'" << a << "'";
  }
}

TEST(ValidateHostPortTest, MessagesSayWhatIsWrong) {
  EXPECT_THAT(ValidateHostPort("nohost", "x").message(), HasSubstr("not HOST:PORT"));
  EXPECT_THAT(ValidateHostPort("h:ab", "x").message(), HasSubstr("not a number"));
  EXPECT_THAT(ValidateHostPort("h:70000", "x").message(), HasSubstr("out of range"));
}

// ---------------------------------------------------------------------------------------------
// LoadJsonFile

TEST(LoadJsonFileTest, ReadsValidFile) {
  TempDir dir;
  WriteFile(dir.path() / "a.json", R"({"x": [1, 2], "y": "z"})");
  auto json = LoadJsonFile(dir.path() / "a.json");
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ((*json)["x"][1], 2);
  EXPECT_EQ((*json)["y"], "z");
}

TEST(LoadJsonFileTest, MissingFileIsNotFound) {
  TempDir dir;
  auto json = LoadJsonFile(dir.path() / "nope.json");
  ASSERT_EQ(json.status().code(), absl::StatusCode::kNotFound) << json.status();
  EXPECT_THAT(json.status().message(), HasSubstr("nope.json"));
}

TEST(LoadJsonFileTest, BadJsonIsInvalidArgument) {
  TempDir dir;
  for (const char* text : {"{", "{\"a\": 1,}", "not json", ""}) {
    WriteFile(dir.path() / "bad.json", text);
    auto json = LoadJsonFile(dir.path() / "bad.json");
    EXPECT_EQ(json.status().code(), absl::StatusCode::kInvalidArgument) << "'" << text << "'";
    EXPECT_THAT(json.status().message(), HasSubstr("bad.json")) << "'" << text << "'";
    EXPECT_THAT(json.status().message(), HasSubstr("invalid JSON")) << "'" << text << "'";
  }
}

// ---------------------------------------------------------------------------------------------
// ParseConfigJson

TEST(ParseConfigJsonTest, ParsesAndNamesTheFileWhenInvalid) {
  auto json = ParseConfigJson(R"({"a": 1})", "conf/x.json");
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ((*json)["a"], 1);
  auto bad = ParseConfigJson("{nope", "conf/x.json");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("conf/x.json: invalid JSON: "));
}

TEST(ParseConfigJsonTest, KnownKeysAreCheckedAtTheTopLevel) {
  constexpr absl::string_view kKnown[] = {"a", "b"};
  EXPECT_TRUE(ParseConfigJson(R"({"a": 1, "b": {"c": 2}})", "x.json", kKnown).ok());
  auto unknown = ParseConfigJson(R"({"a": 1, "zz": 2})", "x.json", kKnown);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(),
              HasSubstr("x.json: zz: unknown field (known fields: a, b)"));
  auto array = ParseConfigJson("[1]", "x.json", kKnown);
  EXPECT_THAT(array.status().message(), HasSubstr("x.json: : must be a JSON object"));
  // Malformed JSON is reported before any key.
  EXPECT_THAT(ParseConfigJson("{", "x.json", kKnown).status().message(), HasSubstr("invalid JSON"));
}

// ---------------------------------------------------------------------------------------------
// WritePortFile

TEST(WritePortFileTest, WritesPortAndNewline) {
  TempDir dir;
  const fs::path file = dir.path() / "port";
  ASSERT_TRUE(WritePortFile(file, 50051).ok());
  EXPECT_EQ(ReadFile(file), "50051\n");
  // Atomic write: no temporary file is left behind.
  EXPECT_FALSE(fs::exists(dir.path() / "port.tmp"));
}

TEST(WritePortFileTest, OverwritesExistingFile) {
  TempDir dir;
  const fs::path file = dir.path() / "port";
  WriteFile(file, "a much longer previous content\n");
  ASSERT_TRUE(WritePortFile(file, 7).ok());
  EXPECT_EQ(ReadFile(file), "7\n");
}

TEST(WritePortFileTest, UnwritableDirectoryFails) {
  TempDir dir;
  absl::Status s = WritePortFile(dir.path() / "missing-dir" / "port", 1234);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("cannot write port file"));
}

}  // namespace
}  // namespace switchyard
