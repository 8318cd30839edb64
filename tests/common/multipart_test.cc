#include "common/multipart.h"

#include <gtest/gtest.h>

namespace switchyard::http {
namespace {

constexpr char kType[] = "multipart/form-data; boundary=\"XyZ\"";

TEST(Multipart, ParsesFieldsAndFilesWithBinaryData) {
  const std::string png("\x89PNG\r\n\x1a\n\0\r\n--X", 15);
  const std::string body =
      "--XyZ\r\nContent-Disposition: form-data; name=\"model_id\"\r\n\r\n"
      "esrgan\r\n"
      "--XyZ\r\nContent-Disposition: form-data; name=\"image\"; "
      "filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n" +
      png +
      "\r\n"
      "--XyZ--\r\n";
  auto parts = ParseMultipartForm(kType, body);
  ASSERT_TRUE(parts.ok()) << parts.status();
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_EQ(parts->at("model_id").data, "esrgan");
  EXPECT_EQ(parts->at("model_id").filename, "");
  EXPECT_EQ(parts->at("image").data, png);
  EXPECT_EQ(parts->at("image").filename, "a.png");
  EXPECT_EQ(parts->at("image").content_type, "image/png");
}

TEST(Multipart, MalformedBodiesAreInvalidArgumentSayingWhy) {
  auto not_form = ParseMultipartForm("application/json", "{}");
  EXPECT_EQ(not_form.status().code(), absl::StatusCode::kInvalidArgument);
  auto no_boundary = ParseMultipartForm("multipart/form-data", "--x\r\n");
  EXPECT_NE(no_boundary.status().message().find("boundary"), std::string::npos);
  auto unterminated =
      ParseMultipartForm(kType, "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nvalue");
  EXPECT_NE(unterminated.status().message().find("final boundary"), std::string::npos)
      << unterminated.status();
  auto no_name =
      ParseMultipartForm(kType, "--XyZ\r\nContent-Disposition: form-data\r\n\r\nv\r\n--XyZ--");
  EXPECT_NE(no_name.status().message().find("no name"), std::string::npos) << no_name.status();
  auto no_headers_end = ParseMultipartForm(kType, "--XyZ\r\nContent-Disposition: form-data");
  EXPECT_EQ(no_headers_end.status().code(), absl::StatusCode::kInvalidArgument);
  // An empty form is fine.
  auto empty = ParseMultipartForm(kType, "--XyZ--\r\n");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

}  // namespace
}  // namespace switchyard::http
