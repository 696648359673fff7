// What every GUI test and GUI tool does before its QApplication exists: settings go to a scratch folder (never the
// user's; removed at exit) and windows get the studio's OpenGL format. Declare one first thing in main():
//     GuiTestSetup setup;
//     QApplication app(argc, argv);
#pragma once

#include <QByteArray>
#include <QTemporaryDir>

#include "heatmap_canvas.h"

class GuiTestSetup {
public:
    GuiTestSetup() {
        qputenv("XDG_CONFIG_HOME", config_.path().toUtf8());
        studio::HeatmapCanvas::useDefaultSurfaceFormat();
    }

private:
    QTemporaryDir config_;
};
