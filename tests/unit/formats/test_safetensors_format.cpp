// The project's own safetensors files (cushion, tuner state, calibration checkpoint) say what they are; one check
// (SafetensorsFile::require_format) refuses a file of another kind or version, with the file named.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "cushion/calib_checkpoint.h"
#include "cushion/cushion.h"
#include "formats/safetensors.h"
#include "test_support.h"

using namespace cushion;
using namespace cushion::test;

TEST(SafetensorsFormat, EachReaderRefusesAnotherKindOrVersion) {
    const std::string d = temp_dir("safetensors-format");
    const std::vector<std::pair<std::string, at::Tensor>> t{{"x", at::zeros({2})}};
    save_safetensors(d + "/ckpt", t, {{"format", "cushioncache-checkpoint"}, {"version", "1"}});
    save_safetensors(d + "/ckpt2", t, {{"format", "cushioncache-checkpoint"}, {"version", "2"}});
    save_safetensors(d + "/cushion2", t, {{"format", "cushioncache-cushion"}, {"version", "2"}});

    std::string e = error_of([&] { load_cushion(d + "/ckpt"); });
    EXPECT_NE(e.find(d + "/ckpt: not a cushion file (no cushioncache-cushion format tag)"), std::string::npos) << e;
    e = error_of([&] { load_cushion(d + "/cushion2"); });
    EXPECT_NE(e.find("cushion file version '2' is not supported"), std::string::npos) << e;
    e = error_of([&] { load_calib_checkpoint(d + "/ckpt2"); });
    EXPECT_NE(e.find(d + "/ckpt2: calibration checkpoint version '2' is not supported"), std::string::npos) << e;
    e = error_of([&] { load_calib_checkpoint(d + "/cushion2"); });
    EXPECT_NE(e.find("not a calibration checkpoint (no cushioncache-checkpoint format tag)"), std::string::npos) << e;

    SafetensorsFile f(d + "/ckpt");
    EXPECT_EQ(f.meta("format"), "cushioncache-checkpoint");
    EXPECT_EQ(f.meta("absent"), "");
    EXPECT_NO_THROW(f.require_format("cushioncache-checkpoint", "calibration checkpoint"));
}
