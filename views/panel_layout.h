// The pieces the dock panels (search, tuning) lay out the same way: a settings grid of label / field pairs, two pairs
// a row; buttons with an object name (for the tests and the session) and a tooltip, in a tight grid; a thin progress
// bar.
#pragma once

#include <QGridLayout>
#include <QLabel>
#include <QProgressBar>
#include <QPushButton>

#include <initializer_list>
#include <vector>

namespace studio {

// Appends a row "a [wa]   b [wb]" (wb may be null) to a 4-column grid and advances the row counter.
inline void addSettingsRow(QGridLayout* grid, int& row, const QString& a, QWidget* wa, const QString& b, QWidget* wb) {
    grid->addWidget(new QLabel(a), row, 0);
    grid->addWidget(wa, row, 1);
    if (wb) {
        grid->addWidget(new QLabel(b), row, 2);
        grid->addWidget(wb, row, 3);
    }
    ++row;
}

inline QPushButton* namedButton(const QString& text, const QString& object_name, const QString& tip) {
    auto* b = new QPushButton(text);
    b->setObjectName(object_name);
    b->setToolTip(tip);
    return b;
}

// The buttons row by row (a null leaves its cell empty), tightly spaced.
inline QGridLayout* buttonGrid(std::initializer_list<std::vector<QPushButton*>> rows) {
    auto* g = new QGridLayout;
    g->setHorizontalSpacing(4);
    g->setVerticalSpacing(2);
    int r = 0;
    for (const auto& row : rows) {
        for (int c = 0; c < int(row.size()); ++c)
            if (row[c]) g->addWidget(row[c], r, c);
        ++r;
    }
    return g;
}

inline QProgressBar* thinProgressBar() {
    auto* bar = new QProgressBar;
    bar->setRange(0, 1000);
    bar->setTextVisible(false);
    bar->setMaximumHeight(10);
    return bar;
}

}  // namespace studio
