// Progress bars without synchronous repaints. QProgressBar::setValue repaints the bar at once; in a window
// that holds OpenGL widgets (the heatmap canvases) every such repaint composes and swaps the whole window
// through OpenGL, which with software OpenGL (Mesa llvmpipe) takes 15 - 50 ms. Setting the value with
// updates disabled turns it into an ordinary update(), painted together with the labels changed alongside
// in the next window update (tests/perf/RESULTS.md, GUI section).
#pragma once
#include <QProgressBar>

namespace studio {

inline void setProgressValue(QProgressBar* bar, int value) {
    if (bar->value() == value) return;
    bar->setUpdatesEnabled(false);
    bar->setValue(value);
    bar->setUpdatesEnabled(true);  // schedules update()
}

}  // namespace studio
