#include "model_panel.h"

#include <QComboBox>
#include <QFileInfo>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLocale>
#include <QProgressBar>
#include <QPushButton>
#include <QTreeWidget>
#include <QVBoxLayout>

#include "progress_bar.h"

namespace studio {

ModelPanel::ModelPanel(QWidget* parent) : QWidget(parent) {
    auto* v = new QVBoxLayout(this);
    auto* open_row = new QHBoxLayout;
    auto* open_file = new QPushButton(tr("Open file…"));
    auto* open_dir = new QPushButton(tr("Open folder…"));
    auto* def = new QPushButton(tr("Default"));
    open_file->setToolTip(tr("A llama2.c checkpoint (.bin) or a GGUF file (Ctrl+O)"));
    open_dir->setToolTip(tr("A Hugging Face model directory (Ctrl+Shift+O)"));
    def->setToolTip(tr("The embedded stories260K model"));
    open_row->addWidget(open_file);
    open_row->addWidget(open_dir);
    open_row->addWidget(def);
    v->addLayout(open_row);

    path_ = new QLabel(tr("No model"));
    path_->setWordWrap(true);
    path_->setTextInteractionFlags(Qt::TextSelectableByMouse);
    v->addWidget(path_);

    auto* form = new QFormLayout;
    device_ = new QComboBox;
    device_->setObjectName("deviceCombo");
    dtype_ = new QComboBox;
    dtype_->setObjectName("dtypeCombo");
    dtype_->addItems({"fp32", "fp16", "bf16"});
    apply_ = new QPushButton(tr("Reload on this device"));
    form->addRow(tr("Device"), device_);
    form->addRow(tr("Dtype"), dtype_);
    form->addRow(QString(), apply_);
    v->addLayout(form);

    auto* prog_row = new QHBoxLayout;
    bar_ = new QProgressBar;
    bar_->setRange(0, 1000);
    bar_->setTextVisible(false);
    bar_->setMaximumHeight(14);
    cancel_ = new QPushButton(tr("Cancel"));
    cancel_->setObjectName("cancelLoadButton");
    prog_row->addWidget(bar_, 1);
    prog_row->addWidget(cancel_);
    v->addLayout(prog_row);
    state_ = new QLabel;
    state_->setObjectName("modelState");
    state_->setWordWrap(true);
    v->addWidget(state_);

    tree_ = new QTreeWidget;
    tree_->setObjectName("modelDetails");
    tree_->setColumnCount(2);
    tree_->setHeaderLabels({tr("Property"), tr("Value")});
    tree_->header()->setSectionResizeMode(0, QHeaderView::ResizeToContents);
    tree_->setRootIsDecorated(false);
    tree_->setAlternatingRowColors(true);
    v->addWidget(tree_, 1);
    warnings_ = new QLabel;
    warnings_->setWordWrap(true);
    warnings_->setStyleSheet("color: #d9822b");
    warnings_->hide();
    v->addWidget(warnings_);

    connect(open_file, &QPushButton::clicked, this, &ModelPanel::openFileRequested);
    connect(open_dir, &QPushButton::clicked, this, &ModelPanel::openDirectoryRequested);
    connect(def, &QPushButton::clicked, this, &ModelPanel::defaultRequested);
    connect(apply_, &QPushButton::clicked, this, &ModelPanel::reloadRequested);
    connect(cancel_, &QPushButton::clicked, this, &ModelPanel::cancelRequested);
    setBusy(false);
}

void ModelPanel::setDevices(const QStringList& d) {
    const QString cur = device();
    device_->clear();
    device_->addItems(d);
    setDevice(cur);
}

QString ModelPanel::device() const { return device_->currentText().isEmpty() ? "cpu" : device_->currentText(); }
QString ModelPanel::dtype() const { return dtype_->currentText(); }
void ModelPanel::setDevice(const QString& d) {
    const int i = device_->findText(d);
    if (i >= 0) device_->setCurrentIndex(i);
}
void ModelPanel::setDtype(const QString& d) {
    const int i = dtype_->findText(d);
    if (i >= 0) dtype_->setCurrentIndex(i);
}

void ModelPanel::setBusy(bool busy) {
    cancel_->setEnabled(busy);
    bar_->setVisible(busy);
    cancel_->setVisible(busy);
    apply_->setEnabled(!busy && info_ != nullptr);
}

void ModelPanel::setLoading(const QString& path) {
    path_->setText(QFileInfo(path).fileName() + "\n" + path);
    state_->setText(tr("Loading…"));
    bar_->setValue(0);
    setBusy(true);
}

void ModelPanel::setProgress(double f, const QString& what) {
    setProgressValue(bar_, static_cast<int>(f * 1000));
    state_->setText(tr("Loading: %1 (%2%)").arg(what).arg(static_cast<int>(f * 100)));
}

void ModelPanel::setModel(const ModelInfoPtr& info) {
    info_ = info;
    setBusy(false);
    path_->setText(QFileInfo(info->path).fileName() + "\n" + info->path);
    state_->setText(tr("Loaded in %1 s on %2 (%3)").arg(info->load_seconds, 0, 'f', 2).arg(info->device, info->dtype));
    tree_->clear();
    auto add = [&](const QString& k, const QString& v) { new QTreeWidgetItem(tree_, {k, v}); };
    auto num = [](qint64 n) { return QLocale().toString(n); };
    add(tr("Architecture"), info->arch);
    add(tr("Format"), info->format);
    add(tr("Tokenizer"), info->tokenizer);
    add(tr("Layers"), num(info->layers));
    add(tr("Hidden size"), num(info->dim));
    add(tr("FFN size"), num(info->hidden));
    add(tr("Heads / KV heads"), QString("%1 / %2").arg(info->heads).arg(info->kv_heads));
    add(tr("Head dim"), num(info->head_dim));
    add(tr("Vocabulary"), num(info->vocab));
    add(tr("Context"), num(info->context));
    add(tr("RoPE theta"), QString::number(info->rope_theta));
    add(tr("Parameters"), num(info->params));
    add(tr("Weights in memory"), formatBytes(info->weight_bytes));
    add(tr("Device / dtype"), info->device + " / " + info->dtype);
    warnings_->setVisible(!info->warnings.isEmpty());
    warnings_->setText(info->warnings.join("\n"));
}

void ModelPanel::setFailed(const QString& message) {
    setBusy(false);
    state_->setText(tr("Load failed: %1").arg(message));
}

void ModelPanel::setCancelled() {
    setBusy(false);
    state_->setText(tr("Load cancelled"));
}

QString ModelPanel::summary() const {
    if (!info_) return {};
    return QString("%1 %2 layers dim %3 on %4 %5").arg(info_->arch).arg(info_->layers).arg(info_->dim).arg(info_->device, info_->dtype);
}

}  // namespace studio
