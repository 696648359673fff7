#include "prompt_panel.h"

#include <QHBoxLayout>
#include <QLabel>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QTimer>
#include <QVBoxLayout>

namespace studio {

PromptPanel::PromptPanel(QWidget* parent) : QWidget(parent) {
    auto* v = new QVBoxLayout(this);
    v->setContentsMargins(4, 4, 4, 4);
    edit_ = new QPlainTextEdit;
    edit_->setObjectName("promptEdit");
    edit_->setPlaceholderText(tr("Type a prompt: the heatmaps refresh as you type"));
    v->addWidget(edit_, 1);
    auto* row = new QHBoxLayout;
    auto* load = new QPushButton(tr("Load text…"));
    load->setToolTip(tr("Load a text file into the prompt (Ctrl+T)"));
    status_ = new QLabel;
    status_->setObjectName("promptStatus");
    row->addWidget(load);
    row->addWidget(status_, 1);
    v->addLayout(row);
    debounce_ = new QTimer(this);
    debounce_->setSingleShot(true);
    debounce_->setInterval(300);
    connect(edit_, &QPlainTextEdit::textChanged, debounce_, qOverload<>(&QTimer::start));
    connect(debounce_, &QTimer::timeout, this, [this] { emit promptChanged(text()); });
    connect(load, &QPushButton::clicked, this, &PromptPanel::loadTextRequested);
}

QString PromptPanel::text() const { return edit_->toPlainText(); }
void PromptPanel::setText(const QString& t) { edit_->setPlainText(t); }
void PromptPanel::setStatus(const QString& s) { status_->setText(s); }
QString PromptPanel::status() const { return status_->text(); }
void PromptPanel::setDebounceMs(int ms) { debounce_->setInterval(ms); }
int PromptPanel::debounceMs() const { return debounce_->interval(); }

}  // namespace studio
