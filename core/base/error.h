// Errors the engine reports. Every message says what is wrong and where (file, offset, tensor, field).
#pragma once
#include <stdexcept>
#include <string>

namespace cushion {

// Any user-facing failure: bad file, bad setting, unsupported model, device unavailable.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Raised when a progress callback asked to stop. Nothing half-done is left behind.
class Cancelled : public Error {
public:
    Cancelled() : Error("cancelled") {}
};

}  // namespace cushion
