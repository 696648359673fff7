// A picture of a window as a person sees it, for screenshots and pixel checks in the GUI tests: QWidget::grab() with
// the heatmap canvases drawn in. They are native GL child windows, which grab() leaves black, so each visible canvas'
// own frame is drawn at its place, clipped to what of it is visible.
#pragma once

#include <QPainter>
#include <QPixmap>
#include <QRegion>
#include <QWidget>

#include "heatmap_canvas.h"

inline QPixmap grabWithCanvases(QWidget* w) {
    QPixmap base = w->grab();
    QPainter p(&base);
    for (studio::HeatmapCanvas* c : w->findChildren<studio::HeatmapCanvas*>()) {
        if (!c->isVisible() || c->window() != w->window()) continue;
        const QRegion visible = c->visibleRegion();
        if (visible.isEmpty()) continue;
        const QPoint at = c->mapTo(w, QPoint(0, 0));
        p.save();
        p.setClipRegion(visible.translated(at));
        p.drawImage(at, c->grabFramebuffer());
        p.restore();
    }
    return base;
}
