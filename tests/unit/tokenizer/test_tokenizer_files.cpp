// Which tokenizer file is read and how (core/tokenizer/tokenizer_files.h): one rule for every loader and
// --tokenizer. A file of an unknown kind is refused by name; it used to be read as SentencePiece for a Hugging
// Face directory.
#include <gtest/gtest.h>

#include <filesystem>

#include "formats/model_loader.h"
#include "package/open_target.h"
#include "test_support.h"
#include "tokenizer/tokenizer_files.h"

using namespace cushion;
using namespace cushion::test;
namespace fs = std::filesystem;

TEST(TokenizerFiles, KindFollowsTheFileName) {
    EXPECT_EQ(load_tokenizer_file(stories_tok_model(), 512)->vocab_size(), 512);
    EXPECT_EQ(load_tokenizer_file(stories_tok_bin(), 512)->vocab_size(), 512);
    const std::string d = temp_dir("tokenizer-files");
    const std::string odd = d + "/tok512.txt";
    fs::copy_file(stories_tok_model(), odd);
    const std::string e = error_of([&] { load_tokenizer_file(odd, 512); });
    EXPECT_NE(e.find("unknown kind of tokenizer file 'tok512.txt'"), std::string::npos) << e;
}

TEST(TokenizerFiles, DirectoryPrefersTokenizerModelThenJson) {
    const std::string d = temp_dir("tokenizer-dir");
    EXPECT_EQ(load_tokenizer_in_directory(d, 512), nullptr);
    fs::copy_file(stories_tok_model(), d + "/tokenizer.model");
    auto t = load_tokenizer_in_directory(d, 512);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->vocab_size(), 512);
}

TEST(TokenizerFiles, HuggingFaceDirectoryRefusesAnUnknownTokenizerFile) {
    const std::string d = temp_dir("tokenizer-hf");
    auto m = load_model(stories_bin());
    save_hf_directory(*m, d + "/hf");
    const std::string odd = d + "/tokenizer.txt";
    fs::copy_file(stories_tok_model(), odd);
    LoadOptions o;
    o.tokenizer_path = odd;
    const std::string e = error_of([&] { load_model(d + "/hf", o); });
    EXPECT_NE(e.find("unknown kind of tokenizer file"), std::string::npos) << e;
    o.tokenizer_path = stories_tok_model();
    EXPECT_EQ(load_model(d + "/hf", o)->tokenizer->vocab_size(), 512);
}
