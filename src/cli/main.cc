// switchyard: command-line client of a switchyard-gateway. All logic is in the CLI library
// (cli_commands.h).
#include <iostream>

#include "cli/cli_commands.h"

int main(int argc, char** argv) {
  return switchyard::cli::RunCli(argc, argv, std::cout, std::cerr);
}
