#include "search_panel.h"

#include <QHBoxLayout>
#include <QLabel>
#include <QPushButton>
#include <QVBoxLayout>

namespace studio {

SearchPanel::SearchPanel(QWidget* parent) : QWidget(parent) {
    auto* v = new QVBoxLayout(this);
    auto* title = new QLabel(tr("<b>Search — arrives with the search engine</b>"));
    title->setObjectName("searchPlaceholder");
    v->addWidget(title);
    auto* note = new QLabel(tr("Greedy prefix search (step / run / pause / cancel, candidate table, tau decision), "
                               "prefix tuning and export will appear here once the engine provides them."));
    note->setWordWrap(true);
    v->addWidget(note);
    auto* row = new QHBoxLayout;
    for (const char* name : {"Step", "Run", "Pause", "Cancel"}) {
        auto* b = new QPushButton(tr(name));
        b->setEnabled(false);
        row->addWidget(b);
    }
    v->addLayout(row);
    v->addStretch(1);
    setEnabled(false);
}

}  // namespace studio
