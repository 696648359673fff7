// Which tokenizer file is read, and how: one rule for every loader (llama2.c, GGUF, Hugging Face directories,
// packages) and for --tokenizer.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "tokenizer/tokenizer.h"

namespace cushion {

// A tokenizer file, read by the kind its name says: *.model SentencePiece, *.json a Hugging Face tokenizer.json,
// *.bin a llama2.c tokenizer.bin (vocab_size tokens). Any other name is an Error naming the file and the kinds
// (it used to be read as SentencePiece for a Hugging Face directory, or as tokenizer.bin beside a .bin/.gguf).
std::unique_ptr<Tokenizer> load_tokenizer_file(const std::string& path, int32_t vocab_size);

// The tokenizer of a Hugging Face directory or of a package: tokenizer.model if present, else tokenizer.json;
// nullptr when there is neither.
std::unique_ptr<Tokenizer> load_tokenizer_in_directory(const std::string& dir, int32_t vocab_size);

}  // namespace cushion
