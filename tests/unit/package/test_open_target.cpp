// What a command runs on (core/package/open_target.h): one rule for the CLI and the studio's File > Open.
#include <gtest/gtest.h>

#include "cushion/cushion.h"
#include "package/open_target.h"
#include "test_support.h"

using namespace cushion;
using namespace cushion::test;

TEST(OpenTarget, AModelWithAndWithoutACushion) {
    RunTarget t = open_target(stories_bin());
    ASSERT_NE(t.model, nullptr);
    EXPECT_EQ(t.pkg, nullptr);
    EXPECT_EQ(t.cushion, nullptr);
    EXPECT_FALSE(t.model->fingerprint().empty());

    const std::string d = temp_dir("open-target");
    const int32_t bos = t.model->tokenizer->bos_id();
    save_cushion(make_cushion(*t.model, {bos, 13}), d + "/c.cushion");
    OpenOptions o;
    o.cushion_path = d + "/c.cushion";
    double last = -1;
    o.progress = [&](double f, const std::string&) {
        EXPECT_GE(f, last);
        last = f;
        return true;
    };
    RunTarget u = open_target(stories_bin(), o);
    ASSERT_NE(u.cushion, nullptr);
    EXPECT_EQ(u.cushion->prefix_ids, (std::vector<int32_t>{bos, 13}));
    EXPECT_DOUBLE_EQ(last, 1.0);
}

TEST(OpenTarget, RefusesInt8KernelsOnAModelAndUnknownKernels) {
    OpenOptions o;
    o.kernels = "int8";
    EXPECT_NE(error_of([&] { open_target(stories_bin(), o); }).find("--kernels int8 runs an exported package"),
              std::string::npos);
    o.kernels = "fast";
    EXPECT_NE(error_of([&] { open_target(stories_bin(), o); }).find("kernels must be simulated or int8"),
              std::string::npos);
}

TEST(OpenTarget, CancelWhileLoadingIsCancelled) {
    OpenOptions o;
    o.progress = [](double, const std::string&) { return false; };
    EXPECT_THROW(open_target(stories_bin(), o), Cancelled);
}
