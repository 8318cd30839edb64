// A minimal HTTP/1.0 client for tests on loopback (no client library needed).
#pragma once

#include <string>

namespace switchyard::testing {

struct HttpResult {
  int status = 0;  // 0 when the connection failed
  std::string body;
};

// One request to 127.0.0.1:`port`; reads until the server closes (bounded by a 60 s timeout).
HttpResult HttpRequest(int port, const std::string& method, const std::string& path,
                       const std::string& content_type = "", const std::string& body = "");

}  // namespace switchyard::testing
