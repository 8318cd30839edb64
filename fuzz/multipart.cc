// Fuzzes http::ParseMultipartForm (the Livepeer API's multipart/form-data bodies).
// Input: the Content-Type header value, '\n', then the body.
#include <cstdint>
#include <string>

#include "common/multipart.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto [header, body_view] = switchyard::fuzz::SplitFirstLine(switchyard::fuzz::AsView(data, size));
  const std::string content_type(header);
  const std::string body(body_view);
  auto form = switchyard::http::ParseMultipartForm(content_type, body);
  if (!form.ok()) {
    switchyard::fuzz::CheckInvalidArgument(form.status());
    return 0;
  }
  SWITCHYARD_FUZZ_CHECK(form->size() <= 1002, "more parts than the parser's limit");
  for (const auto& [name, part] : *form) {
    SWITCHYARD_FUZZ_CHECK(!name.empty(), "a part without a name");
    // Every part's data is a piece of the body, delimited by CRLF and the boundary.
    SWITCHYARD_FUZZ_CHECK(body.find(part.data) != std::string::npos,
                          "a part's data is not in the body");
    SWITCHYARD_FUZZ_CHECK(part.data.size() < body.size(), "a part as large as the body");
  }
  return 0;
}
