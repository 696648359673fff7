// Placeholder for the greedy search / prefix tuning / export views. They arrive with the search engine
// (core/greedy_search.h, core/prefix_tuner.h); until then the dock is present, labelled and disabled,
// with no behaviour behind it.
#pragma once
#include <QWidget>

namespace studio {

class SearchPanel : public QWidget {
    Q_OBJECT
public:
    explicit SearchPanel(QWidget* parent = nullptr);
};

}  // namespace studio
